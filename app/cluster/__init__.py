"""The cluster: who its members are and where each document lives.

Sans-I/O logic only (tested with plain values, shared by the node and the simulator):
:mod:`app.cluster.placement` decides which regions and nodes hold a document.
"""
