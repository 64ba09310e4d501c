"""Old import path, kept for code not yet moved: use kubeserial_common.core.names."""

from kubeserial_common.core.names import *  # noqa: F403
