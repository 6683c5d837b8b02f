"""The network edge: gRPC servers and clients, replication, the `markex` CLI.

Protobuf types live here and in `markex.v1`; `ledger` types cross the edge
only as parsed values. Ledger errors become gRPC status codes in
`node.status`.
"""
