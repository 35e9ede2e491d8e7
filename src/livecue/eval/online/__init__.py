"""Online-video benchmarks where the model decides when to answer (issue 21): OVO-Bench, StreamingBench and a
ProactiveVideoQA-style proactive task, in one item form (:mod:`.items`)."""
