from execrl.cli import main

main()
