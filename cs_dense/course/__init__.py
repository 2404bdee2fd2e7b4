"""Course tooling: nbgrader settings, release, autograde, feedback, sample submissions, CLI."""
