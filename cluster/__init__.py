"""zonesim's outer layer: the command line now; the sweep, its driver, store and exporter later.

Dependencies point one way, ``core`` <- ``workloads`` <- ``cluster``: this package may import
anything (ray, prometheus_client), and nothing below it imports this package.
"""
