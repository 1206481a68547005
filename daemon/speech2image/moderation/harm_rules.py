"""Word rules for the harms that matter for pictures: gore, harm to children, cruelty to
animals, self-harm. Written against tests/data/moderation/dev_harms.tsv; the blind
test_harms.tsv was committed before these rules and is only evaluated.

A rule needs a victim and a harm together ("a kitten" + "set on fire"), within a few
words, so that "a vet giving a dog an injection" and "a kid crying because the ice
cream fell" stay pictures. The semantic backend carries what words alone cannot.
"""

from __future__ import annotations

GAP = r"(?:\w+ ){0,4}"

WORDS: dict[str, str] = {
    "CHILD": (
        r"(?:child|children|childs|kid|kids|toddlers?|bab(?:y|ies)|infants?|newborns?|"
        r"little (?:girl|boy|girls|boys|ones?)|young (?:girl|boy|girls|boys)|schoolgirls?|"
        r"schoolboys?|orphans?|minors?|preteens?|pre teens?|tweens?|"
        r"(?:\w+ )?(?:year|yr) olds?|(?:my|his|her|their|the|a) (?:son|daughter|stepson|"
        r"stepdaughter)|sons|daughters|boy|girl|boys|girls)"
    ),
    "CHILD_HARM": (
        r"(?:beat|beats|beating|beaten|hit|hitting|slapp\w*|punch\w*|kick\w*|whipp\w*|whip marks|"
        r"belt|abus\w*|chained|chains?|caged?|in a cage|locked (?:in|up|inside)|tied (?:up|to)|"
        r"kidnapp?\w*|abduct\w*|traffick\w*|sold|for sale|slaves?|forced to|starv\w*|"
        r"neglected|abandoned|left alone|bruises|bruised|burn(?:s|ed|ing)? with|cigarette burns|"
        r"drown\w*|strangl\w*|hurt\w*|torment\w*|tortur\w*|crying in (?:a|the) (?:cage|cellar|"
        r"basement)|(?:guns|rifles|a rifle|a gun) (?:in|at)|at gunpoint|handcuffed|held down|"
        r"branded|thrown (?:down|against|off|into)|twisted|taped? \w* ?mouth|bleeding|kennel|"
        r"bride|married off|brothel|motel room|lingerie|naked|nude|undress\w*|seductive\w*|"
        r"sexual\w*|posing in (?:a )?bikini|pimp\w*|luring|lured)"
    ),
    "ANIMAL": (
        r"(?:animals?|dogs?|puppy|puppies|cats?|kittens?|kitty|pigs?|piglets?|cows?|calf|calves|"
        r"horses?|pon(?:y|ies)|donkeys?|rabbits?|bunn(?:y|ies)|hamsters?|guinea pigs?|birds?|"
        r"owls?|parrots?|chickens?|hens?|roosters?|ducks?|ducklings?|geese|goose|goats?|sheep|"
        r"lambs?|bulls?|foxes|fox|deer|elephants?|monkeys?|bears?|turtles?|frogs?|mice|mouse|"
        r"rats?|squirrels?|sharks?|dolphins?|whales?|seals?|pets?|stray|strays|goldfish|fish)"
    ),
    "CRUELTY": (
        r"(?:kick\w*|beat|beats|beating|beaten|hit with|whipp\w*|tortur\w*|abus\w*|burn\w*|"
        r"set (?:on fire|alight|ablaze)|on fire|douse\w*|drown\w*|skinn\w* alive|skinned|flay\w*|"
        r"nail\w* to|nailed|glu\w* (?:to|its|their)|tied (?:to|up)|hang\w* by|strangl\w*|"
        r"starv\w*|mutilat\w*|cut(?:ting)? off (?:its|their|the)|de ?clawed|stabb?\w*|"
        r"shot for fun|for fun|fireworks? tied|firecrackers?|thrown? (?:from|off|into|against)|"
        r"throw\w* (?:a|the)? ?\w* (?:from|off|into|against)|stomp\w*|crush\w*|boil\w* alive|"
        r"blow\w* up|in a microwave|microwav\w*|used as (?:bait|target)|fighting ring|"
        r"forced to fight|bleeding out|finned alive|shark finning|taped shut|in a garbage bag|"
        r"cut apart|cut off|chained up|poked|hot poker|locked in a hot car|torn and bleeding|"
        r"by (?:its|the) tail|dragged (?:by|behind)|stuffed (?:into|in)|fed (?:alive|live) to|"
        r"feeding a live|live (?:kitten|puppy|rabbit|cat|dog) to)"
    ),
}

CHILD_HARM = [
    r"\b{CHILD} " + GAP + r"{CHILD_HARM}\b",
    r"\b{CHILD_HARM} " + GAP + r"{CHILD}\b",
    r"\b(?:child|kid|underage) (?:soldiers?|brides?|labou?r camp|slaves?|prostitut\w*|porn\w*)\b",
]

ANIMAL_CRUELTY = [
    r"\b{ANIMAL} " + GAP + r"{CRUELTY}\b",
    r"\b{CRUELTY} " + GAP + r"{ANIMAL}\b",
    r"\b(?:dog ?fighting|dog ?fights? (?:ring|pit)|pit bulls? fight\w*|cock ?fight\w*|"
    r"rooster fight\w*|bear baiting|bullbaiting|animal (?:abuse|cruelty|torture)|"
    r"crush video)\b",
]

VIOLENCE = [
    r"\b(?:gore|gory|guts|entrails|intestines|innards|disembowel\w*|eviscerat\w*|"
    r"dismember\w*|decapitat\w*|beheaded|beheading|severed (?:heads?|arms?|legs?|limbs?|"
    r"hands?|fingers?|body parts)|body parts|chopped (?:up )?(?:bodies|body|corpses?)|"
    r"mutilat\w*|mangled (?:bodies|body|corpses?)|impaled|flay(?:ed|ing)|skinned alive|"
    r"pool of blood|covered in blood|blood (?:spray\w*|splatter\w*) (?:on|across|over) "
    r"(?:the )?(?:walls?|victims?|bodies)|brains? (?:splattered|blown out)|rotting (?:corpses?|"
    r"bodies|heads?)|pile of (?:bodies|corpses|skulls and bodies)|mass graves?|massacr\w*|"
    r"execution of (?:prisoners|a prisoner|civilians|hostages)|firing squad|torture (?:chamber|"
    r"scene|victims?)|being tortured|tortured (?:prisoner|man|woman|victim)s?|snuff|"
    r"blood (?:everywhere|gush\w*|soaked|pouring)|cannibal\w*|stoned to death|hacked (?:into "
    r"pieces|to death|apart)|(?:man|woman|person|body|corpse) (?:has been |being )?(?:sawn|"
    r"chopped|hacked) in half|smashed to (?:pulp|pieces)|"
    r"(?:heads?|skulls?) (?:rolling|cracking|crack\w* open|cut off|blown off|exploded)|"
    r"exploded heads?|(?:cut|chopped|hacked|ripped) off (?:his|her|their) (?:heads?|arms?|"
    r"legs?|hands?|fingers?|ears?)|organs (?:spread|spilling|hanging)|burning organs|"
    r"guts (?:spilling|hanging|everywhere)|(?:through|in|into) (?:the|his|her) (?:eye|neck|"
    r"throat) (?:with|and blood)|run over by a (?:train|truck|car) with|dripping (?:head|"
    r"blood from (?:a|the) (?:corpse|body))|(?:ears|heads|scalps) as trophies)\b",
]

SELF_HARM = [
    r"\b(?:suicide|suicidal|self harm\w*|self injur\w*|cutting (?:myself|herself|himself|"
    r"themselves|her (?:arms?|wrists?|thighs?|legs?)|his (?:arms?|wrists?|thighs?|legs?))|"
    r"cut (?:myself|herself|himself)|kill (?:myself|herself|himself|themselves)|"
    r"hang(?:ing)? (?:myself|herself|himself|themselves)|slit(?:ting)? (?:my|her|his|their) "
    r"wrists?|overdos\w*|end(?:ing)? (?:my|her|his|their) (?:own )?life|end it all|"
    r"never (?:wake|come back)|deadly dose|lethal dose|pills to die|noose for (?:me|myself)|"
    r"carv\w* \w* (?:into|in) (?:my|her|his) (?:skin|arms?|thighs?|wrists?)|fresh cuts|"
    r"razor (?:cuts|blade cuts)|thinspo\w*|pro ?ana|pro ?mia|starving (?:myself|herself)|"
    r"purging|thigh gaps?|bones showing (?:proudly|as a goal)|(?:me|myself|herself|himself) "
    r"jump(?:ing)? (?:off|from) (?:a|the) (?:bridge|building|roof|cliff|balcony)|"
    r"(?:wrists?|arms?) slit|taking (?:my|his|her|their) own life|give up and die|"
    r"starve yourself|never wakes? up|(?:gun|shotgun|pistol|barrel) in (?:my|his|her) mouth|"
    r"hanging (?:dead )?(?:in|from) (?:my|his|her) (?:closet|bedroom|garage|ceiling)|"
    r"ready to (?:let go|jump)|goodbye (?:letters?|notes?) (?:to|for|before)|suicide notes?|"
    r"(?:lit match|lighter|cigarette|blade|razor) to (?:my|his|her) own (?:skin|arm|wrist)|"
    r"pill bottle emptied|i deserve (?:this|to die|pain))\b",
]

RULES: dict[str, list[str]] = {
    "violence": VIOLENCE,
    "child_harm": CHILD_HARM,
    "animal_cruelty": ANIMAL_CRUELTY,
    "self_harm": SELF_HARM,
}
