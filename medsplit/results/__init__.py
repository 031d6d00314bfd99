"""The results leaderboard: every committed ``benchmarks/results/*.json`` as one offline HTML
page and one documentation page, with published baselines and reproduce commands
(``make results``). :mod:`~medsplit.results.studies` reads the files,
:mod:`~medsplit.results.baselines` holds the published figures,
:mod:`~medsplit.results.make_command` derives the ``make`` target of a run and
:mod:`~medsplit.results.leaderboard` renders the pages."""
