"""The static report site (contract §8): report tables → MkDocs pages with Plotly charts.

``build_site(paths, cohort_ids=None)`` renders pages into ``<data root>/site/docs`` and builds
them with the MkDocs project in the repository's ``site/`` directory into
``<data root>/site/build``; ``serve(build_dir, port=0)`` serves a build on 127.0.0.1.

Layout of a build (plain ``.html`` files, relative links, nothing fetched from other hosts)::

    index.html                       cohorts
    cross-cohort.html                essays shared between cohorts
    search.html                      MkDocs search (lunr, in a web worker: needs HTTP, not file://)
    assets/                          daydream.css, daydream.js, plotly.min.js (copied from plotly)
    data/cross_cohort.csv
    cohorts/<id>/index.html          overview
    cohorts/<id>/{leaderboard,factors,evaluators,rubrics,agreement,quality}.html
    cohorts/<id>/essays/index.html   essay browser (page-2.html, ... : 200 essays per page)
    cohorts/<id>/essays/<essay_gen_id>.html
    cohorts/<id>/data/*.csv          the report tables, for download
"""

from .build import build_site
from .server import serve

__all__ = ["build_site", "serve"]
