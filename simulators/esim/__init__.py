"""Simulated eUICC and IPA for the eIM (SGP.32 v1.2): device logic sans-IO (`euicc`, `ipa`),
an asyncio HTTPS runner (`https`) for the ESipa ASN.1 binding. docs/SGP32.md, "Simulator"."""
