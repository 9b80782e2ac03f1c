"""Reports people sign off on: one self-contained HTML page per run, JUnit XML, a conformance-style
summary, and the comparison of two runs.

- :mod:`.html`: the page builder (standard library escaping, inline CSS; no script, no external
  URL, font or image: charts are inline SVG or PNG as ``data:`` URIs);
- :mod:`.svg`: the charts drawn here (observed shares with their intervals, the chaos timeline);
  load and upgrade charts are :mod:`harness.load.chart`'s PNGs, embedded;
- :mod:`.records`: the suites' per-check records (the session's :class:`~.records.Recorder`), written
  to ``suites-report.json``;
- :mod:`.suites`: a suites run's page, its JUnit properties and the files beside
  ``suites-report.json``; :mod:`.conformance`: ``meshproof-report.yaml``;
- :mod:`.runs`: the pages and JUnit of ``meshproof load``, ``chaos run`` and ``upgrade-check``;
- :mod:`.compare`: two runs of the suites compared (``meshproof report compare`` and the upgrade
  check: one implementation), and its page;
- :mod:`.versions`: what the mesh runs, read from its proxies and istiod.

Every renderer takes the run's JSON document (what the run already writes), so a page can be
rebuilt from the files alone.
"""
