from stableface.cli import main

main()
