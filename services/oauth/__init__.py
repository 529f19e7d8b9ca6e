"""OAuth 2 access to the API: Authlib's authorization server, developer apps, tokens and scopes."""
