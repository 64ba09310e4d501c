"""Old import path, kept for code not yet moved: use kubeserial_common.core.constants."""

from kubeserial_common.core.constants import *  # noqa: F403
