"""Entry point for the Bazel py_test targets: runs pytest on the test file given as argument.

Bazel's Python stub starts the interpreter by its real path, which skips the virtual
environment's site-packages; scripts/bazel_test.sh passes that directory as RLJAX_SITE.
"""

import os
import site
import sys

if os.environ.get("RLJAX_SITE"):
  site.addsitedir(os.environ["RLJAX_SITE"])

import pytest  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
