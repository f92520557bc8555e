"""Embedded vocabulary for the synthetic tasks (``lmforge.data.synthetic``, ``lmforge.data.knowledge``):
no download, fixed for reproducibility.

- ``WORDS``: 718 everyday English words, 3 to 13 letters, lower case ASCII, sorted. Written for
  this file (household, nature, food, school, work, feelings, verbs and adjectives) plus the
  spelling classics that tokenizers hide letters in (strawberry, mississippi, bookkeeper,
  accommodate, ...). Letter counting and spelling draw from it; nanochat draws from a 370K-word
  download (dwyl/english-words) instead, which also holds many non-words.
- ``NAMES``: 48 first names with the pronoun the arithmetic stories use for them.
"""

from __future__ import annotations

_TEXT = """
able absent accept accident accommodate account acid acorn across actor address admire adult
advice afraid afternoon again agree airport alarm album alcohol alive allow almond alphabet
already amazing ambulance amount anchor angle angry animal ankle answer anything apartment
apology apple apricot april arrive arrow artist asleep attic august aunt autumn avocado awake
baby backpack bacon badge baggage baker balance balcony ball balloon banana bandage banjo basket
bath battery beach bean beard beautiful because bedroom beetle before begin behind believe bell
belt bench berry bicycle bird birthday biscuit blanket blossom blue boat body bookkeeper
bookshelf bottle bowl branch brave bread breakfast brick bridge bright broccoli brother brush
bubble bucket budget buffalo building bullet burger butter butterfly button cabbage cabin cable
cactus cake calendar camel camera campfire canal candle candy canoe canyon captain carpet carrot
castle caterpillar cattle ceiling celery cellar cereal chair chalk champion change cheese cherry
chess chicken chimney chocolate circle citizen city classroom clean clever cliff climate clock
cloud clover coast coconut coffee collect colorful comfortable committee common compass computer
concert cookie copper corner cotton cough country courage cousin cradle crayon cricket crowd
crown cucumber cupboard curtain cushion customer daisy dance danger daughter december decide
deep delicious dentist desert dessert diamond dictionary difference dinner dinosaur direction
dirty doctor dolphin donkey doorbell dragon drawer dream dress drizzle drum duck eagle early
earth easy echo eggplant eight elbow electric elephant elevator embarrass emerald empty energy
engine envelope equal eraser evening everyone exercise explain eyebrow fabric factory family
famous farmer father favorite feather february fence festival fever field finger fireplace
fishing flag flame flashlight flavor flower flute foggy football forest forget fork fountain
fourteen fox freedom freezer friday friend frog fruit funny furniture galaxy garage garden
garlic gate gentle giraffe glass glove goat golden goose gorilla grandmother grape grass
grateful gravity green guitar habit hair hammer hamster handle happy harbor harmony harvest
hazelnut health heart heavy helmet hero hiccup highway hill history hobby holiday honey horizon
horse hospital hotel hour house hundred hungry hurricane husband iceberg idea igloo important
independent insect instrument invite island jacket january jelly jewel journey juice july jump
june jungle kangaroo kettle keyboard kitchen kitten knee knife knight knowledge ladder ladybug
lake lamp language lantern laptop laugh lavender lawyer leader leaf lemon lemonade lesson letter
lettuce library lighthouse lightning lion liquid listen little lizard lobster lonely lullaby
lunch machine magazine magic magnet mailbox mango maple marble market marshmallow meadow medicine
melon memory message metal microwave middle midnight milk minute mirror mississippi mistake
mitten monday money monkey monster month moonlight morning mosquito mother mountain mouse
moustache muffin museum mushroom music mystery napkin narrow nature necessary necklace needle
neighbor nephew nervous newspaper niece night noodle north notebook november number nurse
occasion ocean october octopus office okay olive onion orange orchard ostrich otter outside oven
owl oxygen oyster paddle paint pajamas pancake panda paper parachute parade parent parrot party
passenger pasta peach peacock peanut pear pebble pelican pencil penguin people pepper perfect
perfume person piano picnic picture pillow pineapple pirate pizza planet plastic playground
pocket poetry polite pollen popcorn possess potato powder practice present pretzel princess
problem promise pudding pumpkin puppet puppy purple puzzle pyramid quarter queen question quiet
quilt rabbit raccoon radio rainbow raincoat raspberry receive recipe rectangle refrigerator
remember restaurant rhinoceros rhythm ribbon rice riddle river robot rocket rooster rose
sailboat salad salmon sandwich saturday sausage saxophone scarf school science scissors scooter
season secret separate seven shadow shampoo shark sheep shelf shell shoulder shovel shower
sidewalk silver sister skeleton skiing skyscraper sleep slipper smile snail snowflake soccer
socks sofa soldier speaker spider spinach sponge spoon spring squirrel stadium staircase star
station stomach storm strawberry street student submarine success sugar suitcase summer sunday
sunflower sunshine supermarket surprise swallow sweater swimming table tadpole teacher teapot
teeth telephone telescope temperature tennis thermometer thirsty thousand thunder thursday
ticket tiger toast together tomato tomorrow tongue toothbrush tornado tortoise towel tractor
traffic train treasure triangle trombone trousers truck trumpet tuesday tulip tunnel turkey
turtle twelve umbrella uncle unicorn universe vacation valley vanilla vegetable vinegar violin
volcano volleyball waffle wagon waiter walnut wardrobe wasp watermelon weather wednesday
weekend whale wheel whisper whistle window winter wizard woodpecker wrist yellow yesterday
yogurt zebra zipper zucchini accommodation address balloon bookkeeping committee coffee
embarrassment mississippi occurrence parallel possession raspberry recommend succeed
tomorrow vacuum assessment bubblegum hippopotamus peppermint grasshopper lollipop
cappuccino spaghetti tennessee banana pineapple coffeepot bookworm sleepwalk
"""

WORDS: tuple[str, ...] = tuple(sorted(set(_TEXT.split())))

NAMES: tuple[tuple[str, str], ...] = (
    ("Aisha", "she"), ("Amara", "she"), ("Ana", "she"), ("Bea", "she"), ("Carmen", "she"), ("Chloe", "she"),
    ("Dana", "she"), ("Elena", "she"), ("Fatima", "she"), ("Grace", "she"), ("Hana", "she"), ("Ines", "she"),
    ("Jade", "she"), ("Kira", "she"), ("Lena", "she"), ("Lily", "she"), ("Maya", "she"), ("Mei", "she"),
    ("Nadia", "she"), ("Olivia", "she"), ("Priya", "she"), ("Rosa", "she"), ("Sofia", "she"), ("Zoe", "she"),
    ("Adam", "he"), ("Ben", "he"), ("Carlos", "he"), ("Daniel", "he"), ("Diego", "he"), ("Eli", "he"),
    ("Finn", "he"), ("Hiro", "he"), ("Ivan", "he"), ("Jamal", "he"), ("Jonas", "he"), ("Kofi", "he"),
    ("Leo", "he"), ("Liam", "he"), ("Marco", "he"), ("Noah", "he"), ("Omar", "he"), ("Pablo", "he"),
    ("Raj", "he"), ("Sam", "he"), ("Tariq", "he"), ("Tom", "he"), ("Victor", "he"), ("Yusuf", "he"),
)
