"""``python -m lwlc`` runs the ``lwlc`` command."""

from lwlc.commands.cli import main

if __name__ == "__main__":
    main()
