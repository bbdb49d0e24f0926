"""`llmtop agent`: the dashboard's collector with no UI, handing every snapshot to sinks.

runner.py drives the session's collector on a fixed interval; sinks.py says what a sink is;
recorder.py writes the history database (the one sink every agent has unless told otherwise).
"""
