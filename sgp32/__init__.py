"""SGP.32 eIM adapter: eUICC packages carried over LwM2M object 3443 and CoAP."""
