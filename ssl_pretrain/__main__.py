"""``python -m ssl_pretrain <command> …`` is ``bssl <command> …``."""

from ssl_pretrain.cli import main

if __name__ == "__main__":
    main()
