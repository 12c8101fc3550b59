"""The contenders: code a user would write today, run as its own process against the simulator.

`bfl_loop` and `replicate_client` are standalone programs (`python -m benchmarks.contenders.X`)
that write a JSON report; `this_runner` drives runner's own CLI and reads its database into the
same report shape. Each contender only talks HTTP to the simulator it is given.
"""
