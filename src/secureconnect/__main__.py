from secureconnect.cli.main import main

main()
