"""nbgrader settings for this course; they live in cs_dense.course.settings."""

from cs_dense.course.settings import configure

configure(get_config())  # noqa: F821 - get_config is provided by traitlets when it loads this file
