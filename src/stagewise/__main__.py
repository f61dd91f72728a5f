from stagewise.cli.app import main

main()
