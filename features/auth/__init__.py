"""Users, login, access tokens and login throttling."""
