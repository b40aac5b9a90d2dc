"""`talkserve say` as a script: stream a reply from a running server into an mp4.

    python clients/say.py "Tell me a joke." --avatar sample -o joke.mp4
"""

from talkserve.cli import app

if __name__ == "__main__":
    app(["say", *__import__("sys").argv[1:]], prog_name="say")
