"""Old import path, kept for code not yet moved: use kubeserial_common.runtime.kube."""

from kubeserial_common.runtime.kube import *  # noqa: F403
