"""The widget's wire: the events it sends, and the JSON frames both ways."""
