"""The demo: the seeded synthetic stream, ``vigil demo`` and the embedded broker it can run through.

Built on the engine (:mod:`pipeline.engine`) and the offline evaluation (:mod:`pipeline.evaluation`);
neither of them imports this package.
"""
