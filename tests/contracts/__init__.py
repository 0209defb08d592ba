"""One suite per port, run against the in-memory fake and against the real adapter on its
real server, so that a fake cannot drift from what it stands for."""
