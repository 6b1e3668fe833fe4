from secureconnect.launch import main

main()
