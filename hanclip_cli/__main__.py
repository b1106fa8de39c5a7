from hanclip_cli.entry import main

main()
