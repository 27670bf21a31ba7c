from flux2cli.cli import main

main()
