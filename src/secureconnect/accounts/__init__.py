"""Users, passwords, devices and login sessions."""
