"""The SMTP/LMTP delivery agent: destinations, resolution, protocol, policy, content."""
