"""Accounts: users, sign-up, sessions, email verification, password reset, invitations, members."""
