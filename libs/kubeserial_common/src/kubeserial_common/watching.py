"""Old import path, kept for code not yet moved: use kubeserial_common.runtime.watching."""

from kubeserial_common.runtime.watching import *  # noqa: F403
