"""The spec DSL (contract §3): ``load_spec`` reads a spec and its ``@file:`` includes,
``compile_design`` turns it into design rows (pure; ``stream_design`` lazily, ``count_design``
counts them without making them), ``format_design`` renders them."""

from pipeline.design.spec.compiler import Design, compile_design, count_design, format_design, stream_design
from pipeline.design.spec.loader import ComboDef, PairDef, Spec, TupleDef, load_spec

__all__ = ["ComboDef", "Design", "PairDef", "Spec", "TupleDef", "compile_design", "count_design", "format_design", "load_spec",
           "stream_design"]
