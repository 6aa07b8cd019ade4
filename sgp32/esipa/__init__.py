"""ESipa bindings: thin shells that move bytes between a transport and the eIM core.

`https`: the HTTPS ASN.1 binding (`POST /gsma/rsp2/asn1`) for IPAs with IP connectivity. The
CoAP binding and the LwM2M object 3443 binding are for a later session (docs/SGP32.md).
"""
