"""SGP.32 v1.2 eIM: ASN.1 codec (sgp32.asn1), PSMO/eCO packages, eIM and eUICC signatures,
eUICC certificate chains (docs/SGP32.md). Bindings and queues build on these sans-IO pieces."""
