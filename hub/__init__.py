"""The hub: policy-checked routing over NATS JetStream (router, policy engine, audit trail)."""
