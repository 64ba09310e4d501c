module kubeserial.local/pause

go 1.22
