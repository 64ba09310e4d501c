"""Old import path, kept for code not yet moved: use kubeserial_common.core.backoff."""

from kubeserial_common.core.backoff import *  # noqa: F403
