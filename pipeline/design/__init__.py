"""What a cohort asks for, decided before any call: the spec DSL (`spec`), the catalogs, the
cohort plan and its ids, prompt rendering, the scales and parsers a response is read with, and
the adaptive search's rules. Pure, apart from reading the spec and catalogs and writing a
cohort's membership."""
