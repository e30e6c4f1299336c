"""The static report site (contract §8): report tables → MkDocs pages with Plotly charts.

``build_site(paths, cohort_ids=None)`` renders pages into ``<data root>/site/docs`` and builds
them with the MkDocs project in the repository's ``site/`` directory into
``<data root>/site/build``; ``serve(build_dir, port=0)`` serves a build on 127.0.0.1.

Layout of a build (plain ``.html`` files, relative links, nothing fetched from other hosts; it
works opened from files as well as served)::

    index.html                       cohorts
    cross-cohort.html                essays shared between cohorts
    search.html                      search (assets/daydream.js over search/*.js: no worker, no fetch)
    search/pages.js                  index of the site's own pages
    search/cohorts/<id>.js           index of a cohort: its pages' prose, whole essays, drafts,
                                     evaluators' reasoning, concepts and ids (search.py)
    assets/                          daydream.css, daydream.js, plotly.min.js (copied from plotly)
    data/cross_cohort.csv
    cohorts/<id>/index.html          overview
    cohorts/<id>/{leaderboard,factors,evaluators,rubrics,agreement,quality}.html
    cohorts/<id>/matrix.html         score matrix: essays × (evaluator, rubric), every essay on one page
    cohorts/<id>/compare.html        any essays side by side (?e=<id>,<id>,...: a shareable view)
    cohorts/<id>/rate.html           blind rating mode (localStorage; CSV for `daydream ratings import`)
    cohorts/<id>/failures.html       failed and ambiguous generations, with their files under files/
    cohorts/<id>/essays/index.html   essay browser, every essay on one page
    cohorts/<id>/essays/<essay_gen_id>.html   prompts, texts, usage, rubrics, comparisons
    cohorts/<id>/essays/<essay_gen_id>.js     the same essay as data, for compare and rate
    cohorts/<id>/data/*.csv          the report tables and long.csv (one row per evaluation)
    cohorts/<id>/files/<stage>/<gen_id>/*    the store's files of each failed generation

Every table filters (free text, a select per categorical column, a range per score column),
sorts and pages in the browser over every row (a large table's rows travel as compact JSON in the
page, ``render.table``); the filter, sort and page are kept in the page's query string
(``?<table>.<column>=``) so a view can be shared, and "CSV of these rows" downloads every row
the filter keeps. ``serve(build, live=paths)`` (``daydream preview``) adds the live run view,
``live.html``.
"""

from pipeline.sitegen.build import build_site
from pipeline.sitegen.server import serve

__all__ = ["build_site", "serve"]
