"""Old import path, kept for code not yet moved: use kubeserial_common.core.conditions."""

from kubeserial_common.core.conditions import *  # noqa: F403
