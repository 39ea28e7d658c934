"""`recserve loadtest`: open-loop, closed-loop and ramp load against a Recommender server.

The parent process (cli, pool, report, plots) drives worker processes (worker, open_loop,
closed_loop), each with its own event loop and grpc.aio channel, so the generator can offer
more load than one Python process could.
"""
