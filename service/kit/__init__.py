"""Small shared pieces: errors, auth, money, time."""
