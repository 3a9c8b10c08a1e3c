"""Child processes of the edge-serial benchmark."""
