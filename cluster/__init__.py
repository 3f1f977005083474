"""zonesim's outer layer: the command line, sweeps (spec, driver, executors, worker), the results
store, aggregation, the paper's claims, plots, the Prometheus exporter and the sweep service.

Dependencies point one way, ``core`` <- ``workloads`` <- ``cluster``: this package may import
anything (ray, prometheus_client), and nothing below it imports this package.
"""
