"""What the bot knows about models apart from running them: the catalogue of named models
(`catalogue`), which model a folder holds (`identity`, `facts`), finding and downloading it
(`hub`), tokenizers (`tokenizers`), prompt formats (`prompt_formats`), sampling settings
(`sampling`), the offline demo model (`demo`), and families with code of their own
(`families`, `gptsan/`)."""
