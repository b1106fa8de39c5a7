from hanclip_cli.app import main

main()
