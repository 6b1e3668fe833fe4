"""What every role shares at its edge: errors, request logging, body limits and authentication."""
