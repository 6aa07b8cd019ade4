"""Bootstrap server: factory identities, regional policies, credential issuance."""
