"""Device models: plain objects that see reads and writes at offsets and know nothing of KVM."""
