"""What a user runs on top of the client and the server: `up` (the serving container), `speak` (one
reply to an mp4), `converse` (a conversation at the terminal), `web` (the browser gateway)."""
