from gorilix.cli import main

main(prog_name="gorilix")
