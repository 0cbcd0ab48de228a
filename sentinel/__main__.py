from sentinel.app.cli import main

main()
